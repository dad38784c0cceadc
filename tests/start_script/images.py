"""Image configs of public Docker Hub images, as their registries serve them (from memory of
the official images' Dockerfiles; versions and checksums are illustrative), each with the
account files of its base distribution, where its program lives, and what ``docker run``
gives the process: uid, gid, supplementary groups and HOME.

``tools``: "debian" images have util-linux (setpriv, setsid) and GNU coreutils (chroot);
"busybox" images (Alpine, busybox) have only busybox applets.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .harness import ALPINE_GROUP, ALPINE_PASSWD, DEBIAN_GROUP, DEBIAN_PASSWD

DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
BUSYBOX_PASSWD = """\
root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/bin/false
bin:x:2:2:bin:/bin:/bin/false
sys:x:3:3:sys:/dev:/bin/false
sync:x:4:100:sync:/bin:/bin/sync
mail:x:8:8:mail:/var/spool/mail:/bin/false
www-data:x:33:33:www-data:/var/www:/bin/false
operator:x:37:37:Operator:/var:/bin/false
nobody:x:65534:65534:nobody:/home:/bin/false
"""
BUSYBOX_GROUP = """\
root:x:0:
daemon:x:1:
bin:x:2:
sys:x:3:
adm:x:4:
tty:x:5:
disk:x:6:
wheel:x:10:root
users:x:100:
nogroup:x:65534:
"""
ALPINE_ROOT_GROUPS = [0, 1, 2, 3, 4, 6, 10]  # root is a member of these in Alpine


@dataclass(frozen=True)
class Image:
    name: str
    config: dict[str, Any]
    stub: str  # where the program that argv[0] resolves to lives
    uid: int
    gid: int
    groups: list[int]
    home: str
    tools: str = "debian"
    passwd: str = DEBIAN_PASSWD
    group: str = DEBIAN_GROUP
    workdir: str = "/"
    extra: dict[str, str] = field(default_factory=dict)  # more files to create

    @property
    def argv(self) -> list[str]:
        config = self.config["config"]
        return list(config.get("Entrypoint") or []) + list(config.get("Cmd") or [])

    @property
    def env(self) -> list[str]:
        return list(self.config["config"].get("Env") or [])


def _cfg(**config: Any) -> dict[str, Any]:
    return {"architecture": "amd64", "os": "linux", "config": config}


IMAGES = [
    Image(
        "nginx",
        _cfg(
            Entrypoint=["/docker-entrypoint.sh"],
            Cmd=["nginx", "-g", "daemon off;"],
            Env=[DEFAULT_PATH, "NGINX_VERSION=1.27.4", "NJS_VERSION=0.8.9",
                 "NJS_RELEASE=1~bookworm", "PKG_RELEASE=1~bookworm",
                 "DYNPKG_RELEASE=1~bookworm"],
            ExposedPorts={"80/tcp": {}},
            Labels={"maintainer": "NGINX Docker Maintainers <docker-maint@nginx.com>"},
            StopSignal="SIGQUIT",
        ),
        stub="/docker-entrypoint.sh",
        uid=0, gid=0, groups=[0], home="/root",
        passwd=DEBIAN_PASSWD + "nginx:x:101:101:nginx user:/nonexistent:/bin/false\n",
        group=DEBIAN_GROUP + "nginx:x:101:\n",
    ),
    Image(
        "nginx:alpine",
        _cfg(
            Entrypoint=["/docker-entrypoint.sh"],
            Cmd=["nginx", "-g", "daemon off;"],
            Env=[DEFAULT_PATH, "NGINX_VERSION=1.27.4", "PKG_RELEASE=1", "DYNPKG_RELEASE=1",
                 "NJS_VERSION=0.8.9", "NJS_RELEASE=1"],
            StopSignal="SIGQUIT",
        ),
        stub="/docker-entrypoint.sh",
        uid=0, gid=0, groups=ALPINE_ROOT_GROUPS, home="/root", tools="busybox",
        passwd=ALPINE_PASSWD + "nginx:x:101:101:nginx:/var/cache/nginx:/sbin/nologin\n",
        group=ALPINE_GROUP + "nginx:x:101:nginx\n",
    ),
    Image(
        "redis",
        _cfg(
            Entrypoint=["docker-entrypoint.sh"],
            Cmd=["redis-server"],
            Env=[DEFAULT_PATH, "GOSU_VERSION=1.17", "REDIS_VERSION=7.4.2",
                 "REDIS_DOWNLOAD_URL=http://download.redis.io/releases/redis-7.4.2.tar.gz",
                 "REDIS_DOWNLOAD_SHA=4ddebbf09061cbb589011786febdb34f29767dd7f89dbe712d2b68e808af6a1f"],
            WorkingDir="/data",
            Volumes={"/data": {}},
            ExposedPorts={"6379/tcp": {}},
        ),
        stub="/usr/local/bin/docker-entrypoint.sh",
        uid=0, gid=0, groups=[0], home="/root", workdir="/data",
        passwd=DEBIAN_PASSWD + "redis:x:999:999::/home/redis:/bin/sh\n",
        group=DEBIAN_GROUP + "redis:x:999:\n",
    ),
    Image(
        "postgres",
        _cfg(
            Entrypoint=["docker-entrypoint.sh"],
            Cmd=["postgres"],
            Env=["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:"
                 "/usr/lib/postgresql/17/bin",
                 "GOSU_VERSION=1.17", "LANG=en_US.utf8", "PG_MAJOR=17",
                 "PG_VERSION=17.2-1.pgdg120+1", "PGDATA=/var/lib/postgresql/data"],
            StopSignal="SIGINT",
            Volumes={"/var/lib/postgresql/data": {}},
            ExposedPorts={"5432/tcp": {}},
        ),
        stub="/usr/local/bin/docker-entrypoint.sh",
        uid=0, gid=0, groups=[0], home="/root",
        passwd=DEBIAN_PASSWD + "postgres:x:999:999::/var/lib/postgresql:/bin/bash\n",
        group=DEBIAN_GROUP + "postgres:x:999:\n",
    ),
    Image(
        "httpd",
        _cfg(
            Cmd=["httpd-foreground"],
            Env=["PATH=/usr/local/apache2/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:"
                 "/usr/bin:/sbin:/bin",
                 "HTTPD_PREFIX=/usr/local/apache2", "HTTPD_VERSION=2.4.63",
                 "HTTPD_SHA256=88fc236ab99b2864b248de7d49a008ec2afd7551e64dce8b95f58f32f94c46ab",
                 "HTTPD_PATCHES="],
            WorkingDir="/usr/local/apache2",
            StopSignal="SIGWINCH",
        ),
        stub="/usr/local/bin/httpd-foreground",
        uid=0, gid=0, groups=[0], home="/root", workdir="/usr/local/apache2",
    ),
    Image(
        "node",
        _cfg(
            Entrypoint=["docker-entrypoint.sh"],
            Cmd=["node"],
            Env=[DEFAULT_PATH, "NODE_VERSION=22.13.1", "YARN_VERSION=1.22.22"],
        ),
        stub="/usr/local/bin/docker-entrypoint.sh",
        uid=0, gid=0, groups=[0], home="/root",
        passwd=DEBIAN_PASSWD + "node:x:1000:1000::/home/node:/bin/bash\n",
        group=DEBIAN_GROUP + "node:x:1000:\n",
    ),
    Image(
        "python",
        _cfg(
            Cmd=["python3"],
            Env=["PATH=/usr/local/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                 "LANG=C.UTF-8", "GPG_KEY=7169605F62C751356D054A26A821E680E5FA6305",
                 "PYTHON_VERSION=3.13.1",
                 "PYTHON_SHA256=9cf9427bee9e2242e3877dd0f6b641c1853ca461f39d6503ce260a59c80bf0d9"],
        ),
        stub="/usr/local/bin/python3",
        uid=0, gid=0, groups=[0], home="/root",
    ),
    Image(
        "traefik",
        _cfg(
            Entrypoint=["/entrypoint.sh"],
            Cmd=["traefik"],
            Env=[DEFAULT_PATH],
            ExposedPorts={"80/tcp": {}},
        ),
        stub="/entrypoint.sh",
        uid=0, gid=0, groups=ALPINE_ROOT_GROUPS, home="/root", tools="busybox",
        passwd=ALPINE_PASSWD, group=ALPINE_GROUP,
    ),
    Image(
        "mysql",
        _cfg(
            Entrypoint=["docker-entrypoint.sh"],
            Cmd=["mysqld"],
            Env=[DEFAULT_PATH, "GOSU_VERSION=1.17", "MYSQL_MAJOR=innovation",
                 "MYSQL_VERSION=9.2.0-1.el9", "MYSQL_SHELL_VERSION=9.2.0-1.el9"],
        ),
        stub="/usr/local/bin/docker-entrypoint.sh",
        uid=0, gid=0, groups=[0], home="/root",
        passwd=DEBIAN_PASSWD + "mysql:x:999:999::/var/lib/mysql:/bin/bash\n",
        group=DEBIAN_GROUP + "mysql:x:999:\n",
    ),
    Image(
        "mariadb",
        _cfg(
            Entrypoint=["docker-entrypoint.sh"],
            Cmd=["mariadbd"],
            Env=[DEFAULT_PATH, "GOSU_VERSION=1.17", "LANG=C.UTF-8",
                 "MARIADB_VERSION=1:11.6.2+maria~ubu2404"],
        ),
        stub="/usr/local/bin/docker-entrypoint.sh",
        uid=0, gid=0, groups=[0], home="/root",
    ),
    Image(
        "mongo",
        _cfg(
            Entrypoint=["docker-entrypoint.sh"],
            Cmd=["mongod"],
            Env=[DEFAULT_PATH, "GOSU_VERSION=1.17", "JSYAML_VERSION=3.13.1",
                 "JSYAML_CHECKSUM=662e32319bdd378e91f67578e56a34954b0a2e33aca11d70ab9f4826af24b941",
                 "MONGO_PACKAGE=mongodb-org", "MONGO_REPO=repo.mongodb.org", "MONGO_MAJOR=8.0",
                 "MONGO_VERSION=8.0.4",
                 # The image sets HOME itself: docker run keeps it, whatever passwd says.
                 "HOME=/data/db"],
        ),
        stub="/usr/local/bin/docker-entrypoint.sh",
        uid=0, gid=0, groups=[0], home="/data/db",
    ),
    Image(
        "grafana",
        _cfg(
            Entrypoint=["/run.sh"],
            Env=["PATH=/usr/share/grafana/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:"
                 "/usr/bin:/sbin:/bin",
                 "GF_PATHS_CONFIG=/etc/grafana/grafana.ini", "GF_PATHS_DATA=/var/lib/grafana",
                 "GF_PATHS_HOME=/usr/share/grafana", "GF_PATHS_LOGS=/var/log/grafana",
                 "GF_PATHS_PLUGINS=/var/lib/grafana/plugins",
                 "GF_PATHS_PROVISIONING=/etc/grafana/provisioning"],
            User="472",
            WorkingDir="/usr/share/grafana",
        ),
        stub="/run.sh",
        uid=472, gid=0, groups=[0], home="/home/grafana", tools="busybox",
        workdir="/usr/share/grafana",
        passwd=ALPINE_PASSWD + "grafana:x:472:0::/home/grafana:/sbin/nologin\n",
        group=ALPINE_GROUP.replace("root:x:0:root", "root:x:0:root,grafana"),
    ),
    Image(
        "prometheus",
        _cfg(
            Entrypoint=["/bin/prometheus"],
            Cmd=["--config.file=/etc/prometheus/prometheus.yml",
                 "--storage.tsdb.path=/prometheus"],
            Env=[DEFAULT_PATH],
            User="nobody",
            WorkingDir="/prometheus",
            Volumes={"/prometheus": {}},
        ),
        stub="/bin/prometheus",
        uid=65534, gid=65534, groups=[65534], home="/home", tools="busybox",
        workdir="/prometheus",
        passwd=BUSYBOX_PASSWD, group=BUSYBOX_GROUP + "nobody:x:65534:\n",
    ),
    Image(
        "memcached",
        _cfg(
            Entrypoint=["docker-entrypoint.sh"],
            Cmd=["memcached"],
            Env=[DEFAULT_PATH, "MEMCACHED_VERSION=1.6.34",
                 "MEMCACHED_URL=https://memcached.org/files/memcached-1.6.34.tar.gz",
                 "MEMCACHED_SHA1=1a5e2fea0ef6ea0b1ee4c7b1ad3dd7d8dd1a1f3a"],
            User="memcache",
        ),
        stub="/usr/local/bin/docker-entrypoint.sh",
        uid=11211, gid=11211, groups=[11211], home="/home/memcache",
        passwd=DEBIAN_PASSWD + "memcache:x:11211:11211::/home/memcache:/bin/sh\n",
        group=DEBIAN_GROUP + "memcache:x:11211:\n",
    ),
    Image(
        "rabbitmq",
        _cfg(
            Entrypoint=["docker-entrypoint.sh"],
            Cmd=["rabbitmq-server"],
            Env=["PATH=/opt/rabbitmq/sbin:/opt/erlang/bin:/opt/openssl/bin:/usr/local/sbin:"
                 "/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                 "ERLANG_INSTALL_PATH_PREFIX=/opt/erlang",
                 "OPENSSL_INSTALL_PATH_PREFIX=/opt/openssl",
                 "RABBITMQ_DATA_DIR=/var/lib/rabbitmq", "RABBITMQ_VERSION=4.0.5",
                 "RABBITMQ_PGP_KEY_ID=0x0A9AF2115F4687BD29803A206B73A36E6026DFCA",
                 "RABBITMQ_HOME=/opt/rabbitmq", "HOME=/var/lib/rabbitmq", "LANG=C.UTF-8",
                 "LANGUAGE=C.UTF-8", "LC_ALL=C.UTF-8"],
        ),
        stub="/usr/local/bin/docker-entrypoint.sh",
        uid=0, gid=0, groups=[0], home="/var/lib/rabbitmq",
    ),
    Image(
        "caddy",
        _cfg(
            Cmd=["caddy", "run", "--config", "/etc/caddy/Caddyfile", "--adapter", "caddyfile"],
            Env=[DEFAULT_PATH, "CADDY_VERSION=v2.9.1", "XDG_CONFIG_HOME=/config",
                 "XDG_DATA_HOME=/data"],
            WorkingDir="/srv",
        ),
        stub="/usr/bin/caddy",
        uid=0, gid=0, groups=ALPINE_ROOT_GROUPS, home="/root", tools="busybox",
        workdir="/srv", passwd=ALPINE_PASSWD, group=ALPINE_GROUP,
    ),
    Image(
        "haproxy",
        _cfg(
            Entrypoint=["docker-entrypoint.sh"],
            Cmd=["haproxy", "-f", "/usr/local/etc/haproxy/haproxy.cfg"],
            Env=[DEFAULT_PATH, "HAPROXY_VERSION=3.1.2",
                 "HAPROXY_URL=https://www.haproxy.org/download/3.1/src/haproxy-3.1.2.tar.gz",
                 "HAPROXY_SHA256=af35dc8bf3193870b72276a63920974bef1405fc41038d545b86b641aa59f400"],
            User="haproxy",
            WorkingDir="/var/lib/haproxy",
            StopSignal="SIGUSR1",
        ),
        stub="/usr/local/bin/docker-entrypoint.sh",
        uid=99, gid=99, groups=[99], home="/var/lib/haproxy", workdir="/var/lib/haproxy",
        passwd=DEBIAN_PASSWD + "haproxy:x:99:99::/var/lib/haproxy:/usr/sbin/nologin\n",
        group=DEBIAN_GROUP + "haproxy:x:99:\n",
    ),
    Image(
        "elasticsearch",
        _cfg(
            Entrypoint=["/bin/tini", "--", "/usr/local/bin/docker-entrypoint.sh"],
            Cmd=["eswrapper"],
            Env=["PATH=/usr/share/elasticsearch/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:"
                 "/usr/bin:/sbin:/bin",
                 "ELASTIC_CONTAINER=true"],
            User="1000:0",
            WorkingDir="/usr/share/elasticsearch",
        ),
        stub="/bin/tini",
        # An explicit group: gid 0, and only it (the user's own group 1000 is not added).
        uid=1000, gid=0, groups=[0], home="/usr/share/elasticsearch",
        workdir="/usr/share/elasticsearch",
        passwd=DEBIAN_PASSWD
        + "elasticsearch:x:1000:1000::/usr/share/elasticsearch:/bin/bash\n",
        group=DEBIAN_GROUP + "elasticsearch:x:1000:\n",
    ),
    Image(
        "jenkins",
        _cfg(
            Entrypoint=["/usr/bin/tini", "--", "/usr/local/bin/jenkins.sh"],
            Env=[DEFAULT_PATH, "LANG=C.UTF-8", "JENKINS_HOME=/var/jenkins_home",
                 "JENKINS_SLAVE_AGENT_PORT=50000", "REF=/usr/share/jenkins/ref",
                 "JENKINS_VERSION=2.479.3", "JENKINS_UC=https://updates.jenkins.io",
                 "JAVA_HOME=/opt/java/openjdk"],
            User="jenkins",
        ),
        stub="/usr/bin/tini",
        # The user is also a member of "users" (100) and "staff" (50): supplementary groups.
        uid=1000, gid=1000, groups=[1000, 50, 100], home="/var/jenkins_home",
        passwd=DEBIAN_PASSWD + "jenkins:x:1000:1000::/var/jenkins_home:/bin/bash\n",
        group=DEBIAN_GROUP.replace("staff:x:50:", "staff:x:50:jenkins").replace(
            "users:x:100:", "users:x:100:root,jenkins"
        )
        + "jenkins:x:1000:\n",
    ),
    Image(
        "wordpress",
        _cfg(
            Entrypoint=["docker-entrypoint.sh"],
            Cmd=["apache2-foreground"],
            Env=[DEFAULT_PATH, "PHPIZE_DEPS=autoconf dpkg-dev file g++ gcc libc-dev make "
                 "pkg-config re2c", "PHP_INI_DIR=/usr/local/etc/php",
                 'PHP_CFLAGS=-fstack-protector-strong -fpic -fpie -O2 '
                 '-D_LARGEFILE_SOURCE -D_FILE_OFFSET_BITS=64',
                 "PHP_VERSION=8.2.27"],
            WorkingDir="/var/www/html",
            StopSignal="SIGWINCH",
        ),
        stub="/usr/local/bin/docker-entrypoint.sh",
        uid=0, gid=0, groups=[0, 100], home="/root", workdir="/var/www/html",
        group=DEBIAN_GROUP.replace("users:x:100:", "users:x:100:root"),
    ),
    Image(
        "ubuntu",
        _cfg(Cmd=["/bin/bash"], Env=[DEFAULT_PATH]),
        stub="/bin/bash",
        uid=0, gid=0, groups=[0], home="/root",
    ),
    Image(
        "registry",
        _cfg(
            Entrypoint=["/entrypoint.sh"],
            Cmd=["/etc/distribution/config.yml"],
            Env=[DEFAULT_PATH, "OTEL_TRACES_EXPORTER=none"],
            Volumes={"/var/lib/registry": {}},
        ),
        stub="/entrypoint.sh",
        uid=0, gid=0, groups=ALPINE_ROOT_GROUPS, home="/root", tools="busybox",
        passwd=ALPINE_PASSWD, group=ALPINE_GROUP,
    ),
    Image(
        # A Spring Boot service built by Jib on eclipse-temurin: Jib writes the whole java
        # command line as the Entrypoint (JVM flags, classpath, main class).
        "spring-boot-app",
        _cfg(
            Entrypoint=["java", "-XX:+UseContainerSupport", "-XX:MaxRAMPercentage=75.0",
                        "-XX:InitialRAMPercentage=50.0", "-XX:+ExitOnOutOfMemoryError",
                        "-XX:+UseG1GC", "-Xss512k", "-Djava.security.egd=file:/dev/./urandom",
                        "-Dfile.encoding=UTF-8", "-Duser.timezone=UTC",
                        "-Dspring.profiles.active=prod", "-Dserver.port=8080",
                        "-Dmanagement.endpoints.web.exposure.include=health,info,prometheus",
                        "-Dlogging.pattern.console=%d{yyyy-MM-dd HH:mm:ss} %-5level "
                        "%logger{36} - %msg%n",
                        "-cp", "/app/resources:/app/classes:/app/libs/*",
                        "com.example.orders.OrdersServiceApplication"],
            Cmd=["--spring.config.additional-location=optional:file:/config/"],
            Env=["PATH=/opt/java/openjdk/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:"
                 "/usr/bin:/sbin:/bin",
                 "JAVA_HOME=/opt/java/openjdk", "LANG=en_US.UTF-8", "LANGUAGE=en_US:en",
                 "LC_ALL=en_US.UTF-8", "JAVA_VERSION=jdk-21.0.5+11",
                 "JAVA_TOOL_OPTIONS=-XX:+IgnoreUnrecognizedVMOptions"],
            User="spring:spring",
            WorkingDir="/app",
            ExposedPorts={"8080/tcp": {}},
            Labels={"org.opencontainers.image.source": "https://github.com/example/orders"},
        ),
        stub="/opt/java/openjdk/bin/java",
        uid=1001, gid=1001, groups=[1001], home="/home/spring", workdir="/app",
        passwd=DEBIAN_PASSWD + "spring:x:1001:1001::/home/spring:/bin/sh\n",
        group=DEBIAN_GROUP + "spring:x:1001:\n",
    ),
    Image(
        "eclipse-mosquitto",
        _cfg(
            Entrypoint=["/docker-entrypoint.sh"],
            Cmd=["/usr/sbin/mosquitto", "-c", "/mosquitto/config/mosquitto.conf"],
            Env=[DEFAULT_PATH, "VERSION=2.0.20",
                 "DOWNLOAD_SHA256=ebd07d89d2a446a7f74100ad51272e4a8bf300b61634a7812e19f068f2759de8",
                 "GPG_KEYS=A0D6EEA1DCAE49A635A3B2F0779B22DFB3E717B7", "LWS_VERSION=4.2.1"],
        ),
        stub="/docker-entrypoint.sh",
        uid=0, gid=0, groups=ALPINE_ROOT_GROUPS, home="/root", tools="busybox",
        passwd=ALPINE_PASSWD + "mosquitto:x:1883:1883:mosquitto:/var/empty:/sbin/nologin\n",
        group=ALPINE_GROUP + "mosquitto:x:1883:\n",
    ),
]  # fmt: skip
