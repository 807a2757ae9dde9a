"""RabbitMQ, PostgreSQL and the S3 server answer like the real services they are."""

import uuid

import boto3
import pika
import psycopg
from botocore.config import Config

from diffleet_core.settings import Settings


def test_rabbitmq_confirms_a_persistent_publish_and_delivers_it(
    local_stack: dict[str, str],
) -> None:
    params = pika.URLParameters(local_stack["DIFFLEET_AMQP_URL"])
    params.socket_timeout = 5
    params.blocked_connection_timeout = 5
    connection = pika.BlockingConnection(params)
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        queue = f"test-{uuid.uuid4().hex[:8]}"
        channel.queue_declare(queue, durable=True)
        body = b'{"hello": "diffleet"}'
        channel.basic_publish(
            "",
            queue,
            body,
            properties=pika.BasicProperties(delivery_mode=pika.DeliveryMode.Persistent),
            mandatory=True,
        )
        method, _, received = channel.basic_get(queue, auto_ack=False)
        assert method is not None
        assert received == body
        channel.basic_ack(method.delivery_tag)
        channel.queue_delete(queue)
    finally:
        connection.close()


def test_postgresql_answers_over_tcp(local_stack: dict[str, str]) -> None:
    with psycopg.connect(local_stack["DIFFLEET_DATABASE_URL"], connect_timeout=5) as conn:
        row = conn.execute("select current_database(), current_user").fetchone()
    assert row == ("diffleet", "diffleet")


def test_s3_puts_and_gets_through_boto3(local_stack: dict[str, str]) -> None:
    s3 = boto3.client("s3", config=Config(connect_timeout=5, read_timeout=10))
    buckets = {bucket["Name"] for bucket in s3.list_buckets()["Buckets"]}
    assert set(Settings().buckets.model_dump().values()) <= buckets
    key = f"tests/{uuid.uuid4().hex}.bin"
    payload = bytes(range(256)) * 64
    s3.put_object(Bucket="diffleet-uploads", Key=key, Body=payload)
    assert s3.get_object(Bucket="diffleet-uploads", Key=key)["Body"].read() == payload
    s3.delete_object(Bucket="diffleet-uploads", Key=key)
