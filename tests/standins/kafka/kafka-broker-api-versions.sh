#!/bin/bash
# The healthcheck's call: --bootstrap-server HOST:PORT answers (a TCP connect, no API versions).
server=localhost:9092
while [ $# -gt 0 ]; do
    [ "$1" = --bootstrap-server ] && server=$2 && shift
    shift
done
exec 3<>"/dev/tcp/${server%:*}/${server##*:}"
