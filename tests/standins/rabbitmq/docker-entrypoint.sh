#!/bin/sh
# The official image's defaults: the user and password from the environment, reachable from
# other containers (not only loopback); the server runs as the rabbitmq user.
set -eu
mkdir -p /etc/rabbitmq/conf.d
cat > /etc/rabbitmq/conf.d/10-defaults.conf <<CONF
default_user = ${RABBITMQ_DEFAULT_USER:-guest}
default_pass = ${RABBITMQ_DEFAULT_PASS:-guest}
loopback_users = none
listeners.tcp.default = 5672
management.tcp.port = 15672
CONF
chown -R rabbitmq:rabbitmq /var/lib/rabbitmq
if [ "$1" = rabbitmq-server ]; then
    cd /var/lib/rabbitmq
    exec setpriv --reuid=rabbitmq --regid=rabbitmq --init-groups \
        env HOME=/var/lib/rabbitmq /usr/lib/rabbitmq/bin/rabbitmq-server
fi
exec "$@"
