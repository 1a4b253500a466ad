"""Drops a stage's consumer group and topics: `python kafka_drop.py GROUP TOPIC...` with the venv's
confluent_kafka, on KAFKA_BOOTSTRAP_SERVERS. Topics that do not exist are skipped; a group that
never committed is not an error worth failing a cleanup for (the caller ignores the exit status)."""

import os
import sys

from confluent_kafka.admin import AdminClient

admin = AdminClient({"bootstrap.servers": os.environ["KAFKA_BOOTSTRAP_SERVERS"]})
existing = admin.list_topics(timeout=10).topics
for future in admin.delete_topics([t for t in sys.argv[2:] if t in existing]).values():
    future.result(timeout=30)
for future in admin.delete_consumer_groups([sys.argv[1]]).values():
    future.result(timeout=30)
