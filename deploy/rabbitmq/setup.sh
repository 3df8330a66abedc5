#!/usr/bin/env bash
# The bridge's user and vhost on a RabbitMQ node (run where rabbitmqctl
# reaches it). The password is read from a file (it passes through
# rabbitmqctl's arguments for the moment the command runs), and the same
# file is the bridge's --amqp-password-file:
#
#   install -m 0600 /dev/null /etc/roomcast/amqp-password && openssl rand -base64 32 > /etc/roomcast/amqp-password
#   deploy/rabbitmq/setup.sh /etc/roomcast/amqp-password
#
# The bridge declares its own topology (docs/bridge.md, "RabbitMQ mapping"),
# so it needs configure rights on its names; consumers of roomcast.events
# bind their own queues with their own users.
set -euo pipefail
password_file=${1:?usage: setup.sh PASSWORD_FILE [USER] [VHOST]}
user=${2:-roomcast-bridge}
vhost=${3:-roomcast}
names='^(roomcast\.events|roomcast\.inbound|roomcast\.dlx|roomcast\.dlq)$'

rabbitmqctl add_vhost "$vhost" 2>/dev/null || true
rabbitmqctl add_user "$user" "$(head -n1 "$password_file")" 2>/dev/null \
  || rabbitmqctl change_password "$user" "$(head -n1 "$password_file")"
# configure / write / read: its exchanges and queues, and the default
# exchange for nothing (the bridge never publishes there).
rabbitmqctl set_permissions -p "$vhost" "$user" "$names" "$names" "$names"
echo "user $user on vhost $vhost; connect with amqps://$user@<host>:5671/$vhost"
