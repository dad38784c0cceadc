"""Tests of hookd.kernels, hookd.kernel_cli and hookd.testing.debian_kernel."""
