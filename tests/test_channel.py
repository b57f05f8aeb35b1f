"""Worker <-> master channel protocol: encode/decode without sockets."""

from __future__ import annotations

import pytest
from corral.worker import channel
from corral.worker.channel import ChannelError, Decoder, Kind, Message


@pytest.mark.smoke
def test_round_trip_every_message() -> None:
    """Every message decodes back to what was encoded."""
    wire = (
        channel.booting(4242)
        + channel.ready()
        + channel.beat(17)
        + channel.retiring("max-requests")
        + channel.fatal(3)
        + channel.drain(restart=True)
        + channel.drain(restart=False)
    )
    assert Decoder().feed(wire) == [
        Message(Kind.BOOTING, "4242"),
        Message(Kind.READY),
        Message(Kind.BEAT, "17"),
        Message(Kind.RETIRING, "max-requests"),
        Message(Kind.FATAL, "3"),
        Message(Kind.DRAIN, "restart"),
        Message(Kind.DRAIN, "stop"),
    ]


def test_split_reads_are_reassembled() -> None:
    """A message split across reads is decoded once complete."""
    d = Decoder()
    wire = channel.beat(123456)
    assert d.feed(wire[:3]) == []
    assert d.pending == 3
    assert d.feed(wire[3:]) == [Message(Kind.BEAT, "123456")]
    assert d.feed(b"") == [] and d.pending == 0


def test_number_property() -> None:
    """Integer arguments are exposed as numbers."""
    assert Decoder().feed(channel.fatal(3))[0].number == 3


@pytest.mark.parametrize(
    "line",
    [
        b"HELLO\n",
        b"READY now\n",
        b"BEAT x\n",
        b"FATAL\n",
        b"DRAIN later\n",
        b"\xff\n",
        b"RETIRING two words\n",
    ],
)
def test_garbage_is_rejected(line: bytes) -> None:
    """Unknown verbs and malformed arguments raise ChannelError."""
    with pytest.raises(ChannelError):
        Decoder().feed(line)


def test_overlong_line_is_rejected() -> None:
    """A line with no newline within MAX_LINE bytes is a protocol error."""
    with pytest.raises(ChannelError):
        Decoder().feed(b"B" * (channel.MAX_LINE + 1))


def test_encode_rejects_bad_arguments() -> None:
    """Encoding validates arguments too."""
    with pytest.raises(ChannelError):
        channel.retiring("has space")
    with pytest.raises(ChannelError):
        channel.encode(Kind.READY, "x")
    with pytest.raises(ChannelError):
        channel.encode(Kind.BEAT)


def test_beat_interval_fits_several_beats_per_timeout() -> None:
    """Heartbeats come at least five times per health-check timeout, at most once a second."""
    assert channel.beat_interval(30.0) == 1.0
    assert channel.beat_interval(2.0) == pytest.approx(0.4)


def test_receive_reads_messages_nothing_yet_and_eof() -> None:
    """receive(): whole messages, [] while nothing is there, None once the peer is gone."""
    import socket

    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    decoder = Decoder()
    try:
        assert decoder.receive(ours) == []
        theirs.sendall(channel.ready() + channel.beat(7)[:3])
        messages = decoder.receive(ours)
        assert messages is not None and [m.kind for m in messages] == [Kind.READY]
        theirs.sendall(channel.beat(7)[3:])
        messages = decoder.receive(ours)
        assert messages is not None and messages[0].number == 7
        theirs.close()
        assert decoder.receive(ours) is None
    finally:
        ours.close()
