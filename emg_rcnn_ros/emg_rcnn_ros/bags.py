"""rosbag2 bags through the pure-Python `rosbags` library (no rclpy): the recorder used by the
training node, the bag form of a session (so every command accepts a bag directory), and the
conversion between bags and the NPZ session form.

A recording bag holds `emg/raw` (EmgArray) and a ground-truth JointState topic, with subject,
session, channel names, sample rate and notes in the metadata's custom_data. Alignment always
uses header stamps (acquisition time), never receive times; `sequence` gaps split a recording into
segments that no analysis window crosses."""

from __future__ import annotations

import json
import os
import sqlite3
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from .core.errors import SessionError
from .core.sessions import DIR_LOADERS, Session
from .core.stamps import sec_nanosec, to_ns

EMG_TYPE = "emg_rcnn_ros_msgs/msg/EmgArray"
JOINT_TYPE = "sensor_msgs/msg/JointState"
EMG_TOPIC = "emg/raw"
BAG_VERSION = 8  # read by rosbag2 on Jazzy and Kilted
SIDECAR = "recording.json"  # custom data, readable even when the recorder was killed

# The message definition, as in emg_rcnn_ros_msgs/msg/EmgArray.msg (a test keeps them equal).
EMG_ARRAY_MSG = """\
std_msgs/Header header
float64 sample_rate
string[] channel_names
uint32 num_samples
float32[] data
uint64 sequence
"""


_STORE = None


def typestore():
    """ROS 2 (Jazzy) standard types plus ours, built once."""
    global _STORE
    if _STORE is None:
        from rosbags.typesys import Stores, get_types_from_msg, get_typestore

        _STORE = get_typestore(Stores.ROS2_JAZZY)
        _STORE.register(get_types_from_msg(EMG_ARRAY_MSG, EMG_TYPE))
    return _STORE


class BagRecorder:
    """Writes serialized (CDR) messages as they arrive. mcap by default, sqlite3 by choice.
    `flush()` (called about once a second by the node) closes the current mcap chunk and syncs
    the file, so that after a crash everything up to the last flush can be recovered."""

    def __init__(self, path: str | Path, storage: str, custom_data: dict[str, str], joint_topic: str) -> None:
        from rosbags.rosbag2 import StoragePlugin, Writer

        plugins = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}
        if storage not in plugins:
            raise ValueError(f"storage must be mcap or sqlite3, got '{storage}'")
        self.path = Path(path)
        self.storage = storage
        self.writer = Writer(self.path, version=BAG_VERSION, storage_plugin=plugins[storage])
        for k, v in custom_data.items():
            self.writer.set_custom_data(k, str(v))
        self.writer.open()
        # A sidecar with the same description: the bag's metadata.yaml is written only on close.
        self.meta = {**custom_data, "joint_topic": joint_topic}
        (self.path / SIDECAR).write_text(json.dumps(self.meta, indent=1))
        store = typestore()
        self.connections = {
            EMG_TOPIC: self.writer.add_connection(EMG_TOPIC, EMG_TYPE, typestore=store),
            joint_topic: self.writer.add_connection(joint_topic, JOINT_TYPE, typestore=store),
        }
        self.counts = dict.fromkeys(self.connections, 0)
        self.closed = False

    def set_meta(self, key: str, value: str) -> None:
        """Add to the description after opening (metadata.yaml is written on close; the sidecar now)."""
        self.writer.set_custom_data(key, str(value))
        self.meta[key] = str(value)
        (self.path / SIDECAR).write_text(json.dumps(self.meta, indent=1))

    def write(self, topic: str, receive_ns: int, cdr: bytes) -> None:
        self.writer.write(self.connections[topic], receive_ns, cdr)
        self.counts[topic] += 1

    def flush(self) -> None:
        """Make everything written so far survive a crash (SIGKILL, power loss): close the mcap
        chunk and sync the file, or commit the sqlite3 transaction."""
        storage = self.writer.storage
        if hasattr(storage, "close_chunk") and getattr(storage.chunk, "message_start_time", None) is not None:
            storage.close_chunk()
        f = getattr(storage, "bio", None)
        if f is not None:
            f.flush()
            os.fsync(f.fileno())
        conn = getattr(storage, "conn", None)
        if conn is not None:
            conn.commit()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.writer.close()


def is_bag(path: Path) -> bool:
    return (path / "metadata.yaml").is_file()


def bag_description(path: Path) -> dict[str, str]:
    """What our recorder stored about a bag (the custom_data of metadata.yaml, kept beside it as
    JSON); empty for a bag recorded by other tools."""
    try:
        return {str(k): str(v) for k, v in json.loads((Path(path) / SIDECAR).read_text()).items()}
    except (OSError, ValueError, AttributeError):
        return {}


def load_bag(path: Path) -> Session:
    """A bag as a session: EMG by sequence, joint angles placed on the EMG clock by their stamps."""
    from rosbags.rosbag2 import Reader

    store = typestore()
    try:
        reader = Reader(path)
        reader.open()
    except Exception as exc:  # rosbags raises several types for unreadable bags
        raise SessionError(f"{path}: not a readable rosbag2 bag ({exc})") from exc
    try:
        custom = bag_description(path)
        joint_topic = custom.get("ground_truth_topic")
        emg_conns = [c for c in reader.connections if c.msgtype == EMG_TYPE]
        joint_conns = [c for c in reader.connections if c.msgtype == JOINT_TYPE
                       and (joint_topic is None or c.topic == joint_topic)]
        if not emg_conns:
            raise SessionError(f"{path}: no {EMG_TYPE} messages")
        if not joint_conns:
            raise SessionError(f"{path}: no ground-truth {JOINT_TYPE} topic ({joint_topic or 'any'})")
        chunks, joints = [], []
        for conn, _, raw in reader.messages(connections=emg_conns + joint_conns):
            m = store.deserialize_cdr(raw, conn.msgtype)
            if conn.msgtype == EMG_TYPE:
                data = np.asarray(m.data, np.float32)
                n = int(m.num_samples)
                if n == 0 or data.size % n:
                    raise SessionError(f"{path}: EmgArray with {data.size} values for {n} samples")
                chunks.append((int(m.sequence), to_ns(m.header.stamp), float(m.sample_rate), list(m.channel_names),
                               data.reshape(n, -1)))
            else:
                joints.append((to_ns(m.header.stamp), list(m.name), np.asarray(m.position, float)))
    finally:
        reader.close()
    return _assemble(path, chunks, joints)


def _assemble(path: Path, chunks: list, joints: list) -> Session:
    if not chunks:
        raise SessionError(f"{path}: no EMG in the bag")
    chunks.sort(key=lambda c: c[0])
    rate, names = chunks[0][2], chunks[0][3]
    if any(c[2] != rate or c[4].shape[1] != chunks[0][4].shape[1] for c in chunks):
        raise SessionError(f"{path}: the sample rate or channel count changes within the bag")
    # Segments of contiguous sequence numbers. Within a segment, sample index and time are related
    # through every chunk's stamp: an amplifier whose clock runs off its nominal rate is stamped
    # through a fitted clock (drivers/clock.py), and the nominal rate alone would let the angles
    # drift against the EMG over a long recording.
    emg, segments, knots = [], [], []  # knots: per segment, (stamps ns, session index of each chunk's first sample)
    n_total, expected = 0, None
    for seq, stamp, _, _, data in chunks:
        if expected is not None and seq < expected:
            continue  # duplicate or overlapping chunk
        if expected is None or seq != expected:
            segments.append([n_total, n_total])
            knots.append(([], []))
        knots[-1][0].append(stamp)
        knots[-1][1].append(n_total)
        emg.append(data)
        n_total += len(data)
        segments[-1][1] = n_total
        expected = seq + len(data)
    emg_arr = np.concatenate(emg)
    # Joint angles: by name, at stamps mapped onto the session's sample index of their segment.
    jnames = joints[0][1] if joints else []
    if not jnames:
        raise SessionError(f"{path}: no ground-truth joint angles")
    for _, names_j, _ in joints:
        if names_j != jnames:
            raise SessionError(f"{path}: joint names change within the bag ({names_j} vs {jnames})")
    jstamps = np.array([j[0] for j in joints], np.int64)
    jpos = np.array([j[2] for j in joints], float)
    times, pos = [], []
    for (_, b), (st, ix) in zip(segments, knots):
        st = np.maximum.accumulate(np.asarray(st, np.int64))
        ix = np.asarray(ix, float)
        # Past the last chunk's first sample: that segment's own rate (nominal with one chunk).
        per_ns = (ix[-1] - ix[0]) / (st[-1] - st[0]) if st[-1] > st[0] else rate * 1e-9
        rel = (jstamps - st[0]).astype(float)
        i = np.interp(rel, (st - st[0]).astype(float), ix)
        i = np.where(rel > st[-1] - st[0], ix[-1] + (rel - (st[-1] - st[0])) * per_ns, i)
        inside = (rel >= 0) & (i <= b - 1)
        times.append(i[inside] / rate)
        pos.append(jpos[inside])
    times, pos = np.concatenate(times), np.concatenate(pos)
    if len(times) < 2:
        raise SessionError(f"{path}: fewer than two joint samples fall within the recorded EMG")
    order = np.argsort(times, kind="stable")
    t = times[order]
    keep = np.concatenate([[True], np.diff(t) > 0])
    return Session(emg_arr.astype(np.float64), rate, pos[order][keep], t[keep], list(jnames),
                   list(names) or [f"ch{i}" for i in range(emg_arr.shape[1])], source=str(path),
                   segments=[(a, b) for a, b in segments])


def is_partial_bag(path: Path) -> bool:
    """A recording whose writer never closed (killed): storage files without metadata.yaml."""
    return not is_bag(path) and (path / SIDECAR).is_file()


def scan_partial(path: Path) -> Iterator[tuple[str, str, int, bytes]]:
    """(topic, type, log time, CDR) of every complete message of an unclosed bag: mcap records up
    to the last complete chunk (mcap's stream reader), or committed sqlite3 rows."""
    for f in sorted(path.glob("*.mcap")):
        from mcap.exceptions import McapError
        from mcap.records import Channel, Message, Schema
        from mcap.stream_reader import StreamReader

        schemas: dict[int, str] = {}
        channels: dict[int, tuple[str, str]] = {}
        with open(f, "rb") as stream:
            try:
                for rec in StreamReader(stream, skip_magic=False).records:
                    if isinstance(rec, Schema):
                        schemas[rec.id] = rec.name
                    elif isinstance(rec, Channel):
                        channels[rec.id] = (rec.topic, schemas.get(rec.schema_id, ""))
                    elif isinstance(rec, Message) and rec.channel_id in channels:
                        topic, name = channels[rec.channel_id]
                        yield topic, name, rec.log_time, rec.data
            except (McapError, EOFError, ValueError, struct.error):
                return  # the end of what was written before the crash
    for f in sorted(path.glob("*.db3")):
        con = sqlite3.connect(f"file:{f}?mode=ro", uri=True)
        try:
            topics = {i: (n, t) for i, n, t in con.execute("SELECT id, name, type FROM topics")}
            for tid, ts, data in con.execute("SELECT topic_id, timestamp, data FROM messages ORDER BY timestamp"):
                yield (*topics[tid], ts, bytes(data))
        finally:
            con.close()


def load_partial(path: Path) -> Session:
    """An unclosed recording as a session, up to its last flush."""
    side = json.loads((path / SIDECAR).read_text())
    joint_topic = side.get("joint_topic", "emg/ground_truth")
    store = typestore()
    chunks, joints = [], []
    for topic, msgtype, _, raw in scan_partial(path):
        if msgtype == EMG_TYPE:
            m = store.deserialize_cdr(raw, EMG_TYPE)
            n = int(m.num_samples)
            chunks.append((int(m.sequence), to_ns(m.header.stamp), float(m.sample_rate), list(m.channel_names),
                           np.asarray(m.data, np.float32).reshape(n, -1)))
        elif msgtype == JOINT_TYPE and topic == joint_topic:
            m = store.deserialize_cdr(raw, JOINT_TYPE)
            joints.append((to_ns(m.header.stamp), list(m.name), np.asarray(m.position, float)))
    return _assemble(path, chunks, joints)


def recover(path: Path, out: Path) -> Path:
    """Rewrite the readable part of an unclosed recording as a complete bag at `out` (for
    `ros2 bag play` and other tools); the original is left as it is."""
    side = json.loads((path / SIDECAR).read_text())
    joint_topic = side.pop("joint_topic", "emg/ground_truth")
    storage = "sqlite3" if any(path.glob("*.db3")) else "mcap"
    rec = BagRecorder(out, storage, {k: str(v) for k, v in side.items()}, joint_topic)
    try:
        for topic, _, ts, raw in scan_partial(path):
            if topic in rec.connections:
                rec.write(topic, ts, raw)
    finally:
        rec.close()
    return out


DIR_LOADERS.append((is_bag, load_bag))
DIR_LOADERS.append((is_partial_bag, load_partial))


def write_session_bag(session: Session, path: str | Path, storage: str = "mcap", chunk: float = 0.01,
                      joint_topic: str = "emg/ground_truth", start_ns: int | None = None,
                      custom_data: dict[str, str] | None = None) -> Path:
    """A session as a bag (`emg-rcnn import`): EmgArray chunks of `chunk` seconds and JointState at
    the joint times, stamped on one clock starting at `start_ns` (default: now)."""
    store = typestore()
    from rosbags.typesys.stores.ros2_jazzy import (
        builtin_interfaces__msg__Time as Time,
    )
    from rosbags.typesys.stores.ros2_jazzy import (
        sensor_msgs__msg__JointState as JointState,
    )
    from rosbags.typesys.stores.ros2_jazzy import (
        std_msgs__msg__Header as Header,
    )

    EmgArray = store.types[EMG_TYPE]
    t0 = time.time_ns() if start_ns is None else int(start_ns)
    rate = session.emg_rate
    meta = {"sample_rate": repr(rate), "channel_names": json.dumps(session.channel_names),
            "ground_truth_topic": joint_topic, **(custom_data or {})}
    rec = BagRecorder(path, storage, meta, joint_topic)

    def header(ns: int) -> Header:
        sec, nanosec = sec_nanosec(ns)
        return Header(stamp=Time(sec=sec, nanosec=nanosec), frame_id="emg")

    events = []
    n = max(1, int(round(chunk * rate)))
    for a, b in session.segments:
        for i in range(a, b, n):
            j = min(b, i + n)
            ns = t0 + int(round(i * 1e9 / rate))
            msg = EmgArray(header=header(ns), sample_rate=rate, channel_names=list(session.channel_names),
                           num_samples=j - i, data=session.emg[i:j].astype(np.float32).ravel(), sequence=i)
            events.append((ns + int(round((j - i - 1) * 1e9 / rate)), EMG_TOPIC, store.serialize_cdr(msg, EMG_TYPE)))
    for tj, p in zip(session.joint_time, session.joint_position):
        ns = t0 + int(round(tj * 1e9))
        msg = JointState(header=header(ns), name=list(session.joint_names), position=np.asarray(p, np.float64),
                         velocity=np.zeros(0), effort=np.zeros(0))
        events.append((ns, joint_topic, store.serialize_cdr(msg, JOINT_TYPE)))
    events.sort(key=lambda e: e[0])
    try:
        for ns, topic, raw in events:
            rec.write(topic, ns, bytes(raw))
    finally:
        rec.close()
    return Path(path)
