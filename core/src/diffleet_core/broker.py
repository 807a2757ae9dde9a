"""RabbitMQ for every component: declares the topology of diffleet_core.queues (the
queues named per tenant on first use), publishes with publisher confirms (a publish
returns only once the broker has the message), and consumes with manual acknowledgement."""

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

import aio_pika
from aio_pika.abc import (
    AbstractChannel,
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractRobustConnection,
    FieldValue,
)
from aio_pika.exceptions import AMQPError, ChannelInvalidStateError
from pydantic import TypeAdapter, ValidationError

from diffleet_core import telemetry
from diffleet_core.messages import Message
from diffleet_core.queues import BACKOFF_STEPS_SECONDS, Topology

Handler = Callable[[AbstractIncomingMessage], Awaitable[None]]
M = TypeVar("M", bound=Message)

logger = logging.getLogger(__name__)


class Broker:
    def __init__(
        self,
        connection: AbstractRobustConnection,
        channel: AbstractChannel,
        topology: Topology,
        timeout: float,
    ) -> None:
        self._connection = connection
        self._channel = channel
        self.topology = topology
        self.timeout = timeout
        self._exchanges: dict[str, AbstractExchange] = {}
        # Queues declared on first use (declare_queue), declared once per connection.
        self._declared: set[str] = set()
        # The channels consume, consumer and subscribe opened (close_consumers).
        self._consuming: list[AbstractChannel] = []

    @classmethod
    async def connect(cls, url: str, topology: Topology, request_timeout: float) -> "Broker":
        connection = await aio_pika.connect_robust(url, timeout=request_timeout)
        channel = await connection.channel(publisher_confirms=True)
        broker = cls(connection, channel, topology, request_timeout)
        await broker.declare()
        return broker

    async def declare(self) -> None:
        """Declares the durable queues and exchanges (idempotent). The tenant queues are
        declared on first use (declare_queue)."""
        await self._channel.declare_queue(self.topology.results_queue, durable=True)
        for name in (self.topology.progress_exchange, self.topology.control_exchange):
            self._exchanges[name] = await self._channel.declare_exchange(
                name, aio_pika.ExchangeType.TOPIC, durable=True
            )
        for seconds in BACKOFF_STEPS_SECONDS:
            name = self.topology.delay(seconds)
            exchange = await self._channel.declare_exchange(
                name, aio_pika.ExchangeType.FANOUT, durable=True
            )
            queue = await self._channel.declare_queue(
                name,
                durable=True,
                arguments={"x-message-ttl": seconds * 1000, "x-dead-letter-exchange": ""},
            )
            await queue.bind(exchange)
            self._exchanges[name] = exchange

    @property
    def connected(self) -> bool:
        """Whether the connection is up now (False while it is being restored). A publish
        on a robust channel waits for the restore with no bound of its own: callers that
        must not wait (transient messages, readiness) look here first."""
        return self._connection.connected.is_set()

    async def declare_worker_queue(self, worker_id: str) -> None:
        await self._channel.declare_queue(self.topology.worker_queue(worker_id), durable=True)

    async def declare_queue(self, queue: str) -> None:
        """Declares a durable queue; later calls for the same queue return at once. No
        expiry: a queue may hold messages while no one consumes it (an operator restarting)."""
        if queue in self._declared:
            return
        await self._channel.declare_queue(queue, durable=True, timeout=self.timeout)
        self._declared.add(queue)

    async def publish_to_queue(self, queue: str, message: Message, message_id: str) -> None:
        """Publishes a persistent message and waits for the broker's confirm."""
        await self._channel.default_exchange.publish(
            _persistent(message, message_id),
            routing_key=queue,
            mandatory=True,
            timeout=self.timeout,
        )

    async def publish_delayed(
        self, queue: str, message: Message, message_id: str, seconds: int
    ) -> None:
        """Publishes to `queue` after `seconds` (one of BACKOFF_STEPS_SECONDS), confirmed."""
        await self._exchanges[self.topology.delay(seconds)].publish(
            _persistent(message, message_id),
            routing_key=queue,
            timeout=self.timeout,
        )

    async def publish_to_exchange(self, exchange: str, routing_key: str, message: Message) -> None:
        await self._exchanges[exchange].publish(
            aio_pika.Message(message.to_bytes(), content_type="application/json"),
            routing_key=routing_key,
            timeout=self.timeout,
        )

    async def consume(self, queue: str, handler: Handler, prefetch: int) -> None:
        """Consumes a durable queue on a channel of its own (its own prefetch window)."""
        channel = await self._consuming_channel()
        await channel.set_qos(prefetch_count=prefetch)
        declared = await channel.declare_queue(queue, durable=True)
        await declared.consume(handler, no_ack=False)

    async def consumer(self, prefetch: int) -> "Consumer":
        """A channel for consuming many queues, each with a prefetch window of its own of
        `prefetch` messages (per-consumer QoS): memory bounded by queues x prefetch."""
        channel = await self._consuming_channel()
        await channel.set_qos(prefetch_count=prefetch, global_=False)
        return Consumer(channel, self.timeout)

    async def subscribe(self, exchange: str, binding: str, handler: Handler) -> None:
        """A transient subscription: an exclusive queue bound to a topic exchange."""
        channel = await self._consuming_channel()
        await channel.set_qos(prefetch_count=256)
        source = await channel.declare_exchange(exchange, aio_pika.ExchangeType.TOPIC, durable=True)
        queue = await channel.declare_queue(exclusive=True, auto_delete=True)
        await queue.bind(source, routing_key=binding)
        await queue.consume(handler, no_ack=False)

    async def _consuming_channel(self) -> AbstractChannel:
        channel = await self._connection.channel()
        self._consuming.append(channel)
        return channel

    async def close_consumers(self) -> None:
        """Closes the channels that consume (their unacknowledged messages go back to
        their queues), keeping the connection and its publishing channel."""
        channels, self._consuming = self._consuming, []
        for channel in channels:
            try:
                await asyncio.wait_for(channel.close(), timeout=self.timeout)
            except Exception as error:  # noqa: BLE001 - a broken channel is closed anyway
                logger.warning("RabbitMQ channel not closed cleanly: %s", error)

    async def queue_depth(self, queue: str) -> int:
        """Messages ready in a queue (not counting those delivered and unacknowledged)."""
        declared = await self._channel.declare_queue(queue, durable=True, passive=True)
        return declared.declaration_result.message_count or 0

    async def close(self) -> None:
        await asyncio.wait_for(self._connection.close(), timeout=self.timeout)


class Consumer:
    """Consumers of many durable queues on one channel (Broker.consumer)."""

    def __init__(self, channel: AbstractChannel, timeout: float) -> None:
        self._channel = channel
        self._timeout = timeout

    async def consume(self, queue: str, handler: Handler) -> None:
        """Declares the durable queue and consumes it in its own prefetch window."""
        declared = await self._channel.declare_queue(queue, durable=True, timeout=self._timeout)
        await declared.consume(handler, no_ack=False, timeout=self._timeout)


def _persistent(message: Message, message_id: str) -> aio_pika.Message:
    """The message, carrying the current trace context to its consumer."""
    headers: dict[str, FieldValue] = {**telemetry.amqp_headers()}
    return aio_pika.Message(
        message.to_bytes(),
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        content_type="application/json",
        message_id=message_id,
        headers=headers,
    )


async def settle(message: AbstractIncomingMessage, *, requeue: bool | None = None) -> None:
    """Acks the message (requeue None), or nacks it back to its queue or away. On a channel
    that closed with its connection it does nothing: RabbitMQ puts every message left
    unacknowledged there back in its queue, and delivers it again once reconnected."""
    try:
        if requeue is None:
            await message.ack()
        else:
            await message.nack(requeue=requeue)
    except (ChannelInvalidStateError, AMQPError) as error:
        logger.warning("message from %s left to redelivery: %s", message.routing_key, error)


async def parse_or_reject(message: AbstractIncomingMessage, schema: TypeAdapter[M]) -> M | None:
    """The message's body as `schema`; a malformed one is rejected (never redelivered)."""
    try:
        return schema.validate_json(message.body)
    except ValidationError as error:
        logger.error("dropping a malformed message from %s: %s", message.routing_key, error)
        await message.reject(requeue=False)
        return None
