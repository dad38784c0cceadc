"""Tests of the START_SCRIPT generator (handlers/start_script.py), executed in real shells."""
