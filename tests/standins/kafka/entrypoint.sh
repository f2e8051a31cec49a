#!/bin/bash
# Listen where KAFKA_ADVERTISED_LISTENERS' INTERNAL listener says (kafka:9092 in compose).
set -euo pipefail
advertised=${KAFKA_ADVERTISED_LISTENERS:-INTERNAL://localhost:9092}
internal=$(tr ',' '\n' <<< "$advertised" | sed -n 's|^INTERNAL://||p' | head -n 1)
internal=${internal:-localhost:9092}
exec tansu broker \
    --listener-url "tcp://0.0.0.0:${internal##*:}" \
    --advertised-listener-url "tcp://${internal}" \
    --storage-engine memory://tansu/
