#!/usr/bin/env bash
# Start the local PostgreSQL and RabbitMQ if they are installed here and stopped, and enable the
# RabbitMQ management plugin (the tests create a vhost per test through its API). Services given
# by URL in the environment (LEDGERDESK_DATABASE_URL, LEDGERDESK_AMQP_URI) are left alone.
set -euo pipefail

wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...
  local seconds=$1 what=$2; shift 2
  for _ in $(seq "$seconds"); do "$@" >/dev/null 2>&1 && return 0; sleep 1; done
  echo "ensure-services: $what did not come up within ${seconds}s" >&2
  return 1
}

if [ -z "${LEDGERDESK_DATABASE_URL:-}" ] && command -v pg_isready >/dev/null; then
  if ! pg_isready -q -h 127.0.0.1 -p 5432; then
    echo "ensure-services: starting PostgreSQL"
    version=$(ls /etc/postgresql | sort -V | tail -n 1)
    pg_ctlcluster --skip-systemctl-redirect "$version" main start
  fi
  wait_for 60 "PostgreSQL" pg_isready -q -h 127.0.0.1 -p 5432
  # Each stack the tests start holds a pool per service: 100 connections (the packaged
  # default) run out when stacks overlap, so a local server gets room for more.
  if [ "$(psql -h 127.0.0.1 -U postgres -Atc 'show max_connections' 2>/dev/null || echo 0)" -lt 300 ] \
      && command -v pg_ctlcluster >/dev/null; then
    echo "ensure-services: raising PostgreSQL max_connections to 400 (restart)"
    psql -q -h 127.0.0.1 -U postgres -c 'ALTER SYSTEM SET max_connections = 400'
    version=$(ls /etc/postgresql | sort -V | tail -n 1)
    pg_ctlcluster --skip-systemctl-redirect "$version" main restart
    wait_for 60 "PostgreSQL" pg_isready -q -h 127.0.0.1 -p 5432
  fi
fi

if [ -z "${LEDGERDESK_AMQP_URI:-}" ] && command -v rabbitmq-server >/dev/null; then
  if ! rabbitmq-diagnostics -q ping >/dev/null 2>&1; then
    echo "ensure-services: starting RabbitMQ"
    rabbitmq-server -detached
    wait_for 90 "RabbitMQ" rabbitmq-diagnostics -q check_running
  elif ! rabbitmq-diagnostics -q check_running >/dev/null 2>&1; then
    # The node answers but its application was stopped (rabbitmqctl stop_app): start it.
    echo "ensure-services: starting the RabbitMQ application"
    rabbitmqctl -q start_app
    wait_for 90 "RabbitMQ" rabbitmq-diagnostics -q check_running
  fi
  if ! rabbitmq-plugins -q list -e -m | grep -qx rabbitmq_management; then
    echo "ensure-services: enabling the RabbitMQ management plugin"
    rabbitmq-plugins -q enable rabbitmq_management
  fi
  wait_for 60 "the RabbitMQ management API" \
    curl -fsS -u guest:guest http://127.0.0.1:15672/api/overview
fi
