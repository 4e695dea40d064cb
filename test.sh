#!/usr/bin/env bash
# Runs every test. Installs what the tests need when it is missing (nothing
# beyond Go yet; the server's end-to-end tests will add Debian packages here).
set -euo pipefail
cd "$(dirname "$0")"
go vet ./...
go test -race -count=1 ./...
