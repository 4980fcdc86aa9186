#!/usr/bin/env bash
# Writes the compose deployment's secrets into secrets/ (once; existing files are kept):
# the kms master key (base64 of 32 random bytes), the PostgreSQL password, kms.toml with
# the database URL, and Grafana's admin password.
#
# The directory is 0700 and the files 0444: bind-mounted secrets keep their host mode and
# the containers run as other users (kms as 10001, PostgreSQL as 999, Grafana as 472), so
# the files must be readable by all, and the directory keeps other host users out.
# Back up secrets/kms-master-key apart from the database: without it the database cannot
# issue access tokens (docs/runbooks/master-key.md).
set -euo pipefail
cd "$(dirname "$0")/secrets"
chmod 0700 .
umask 0222

random() { head -c "$1" /dev/urandom | base64 | tr -d '\n'; }
alnum() { local s; s=$(head -c 64 /dev/urandom | base64 | tr -dc 'A-Za-z0-9'); printf '%s' "${s:0:$1}"; }

[ -e kms-master-key ] || random 32 > kms-master-key
[ -e postgres-password ] || alnum 32 > postgres-password
[ -e kms.toml ] || printf 'db = "postgres://kms:%s@postgres:5432/kms"\n' "$(cat postgres-password)" > kms.toml
[ -e grafana-admin-password ] || alnum 24 > grafana-admin-password
chmod 0444 kms-master-key postgres-password kms.toml grafana-admin-password
ls -l
