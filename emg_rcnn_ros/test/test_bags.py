"""Bags as sessions: lossless NPZ <-> bag round trip through the CLI, read back by independent
readers (mcap_ros2, and rclpy's deserializer), and sequence gaps kept as segments."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from emg_rcnn_ros.bags import EMG_ARRAY_MSG, EMG_TYPE, load_bag, write_session_bag
from emg_rcnn_ros.core.sessions import Session, load_session

from .conftest import run_cli

ROOT = Path(__file__).resolve().parents[2]


def _session(seconds: float = 4.0, rate: float = 1000.0) -> Session:
    rng = np.random.default_rng(0)
    n = int(seconds * rate)
    t = np.arange(0, seconds, 0.01)
    return Session(rng.normal(0, 1e-4, (n, 3)).astype(np.float32).astype(np.float64), rate,
                   np.stack([np.sin(t), np.cos(t)], axis=1), t, ["elbow", "wrist"], ["a", "b", "c"], source="mem")


def test_embedded_definition_matches_the_msg_file() -> None:
    text = (ROOT / "emg_rcnn_ros_msgs" / "msg" / "EmgArray.msg").read_text()
    fields = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("#")]
    assert fields == EMG_ARRAY_MSG.strip().splitlines()


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_import_export_round_trip_is_lossless(tmp_path: Path, storage: str) -> None:
    s = _session()
    from emg_rcnn_ros.core.sessions import save_npz

    save_npz(s, tmp_path / "s.npz")
    r = run_cli("import", str(tmp_path / "s.npz"), "--out", str(tmp_path / "bag"), "--storage", storage)
    assert r.returncode == 0, r.stderr
    r = run_cli("export", str(tmp_path / "bag"), "--out", str(tmp_path / "back.npz"))
    assert r.returncode == 0, r.stderr
    back = load_session(tmp_path / "back.npz")
    np.testing.assert_array_equal(back.emg, s.emg)
    np.testing.assert_allclose(back.joint_time, s.joint_time, atol=1e-9)
    np.testing.assert_array_equal(back.joint_position, s.joint_position)
    assert back.joint_names == s.joint_names and back.channel_names == s.channel_names
    assert back.emg_rate == s.emg_rate
    r = run_cli("import", str(tmp_path / "s.npz"), "--out", str(tmp_path / "bag"))
    assert r.returncode != 0 and "exists" in r.stderr  # never overwrites a recording


def test_independent_readers_decode_our_bag(tmp_path: Path) -> None:
    from mcap_ros2.reader import read_ros2_messages

    s = _session(1.0)
    write_session_bag(s, tmp_path / "bag", storage="mcap", start_ns=5_000_000_000)
    (mcap_file,) = (tmp_path / "bag").glob("*.mcap")
    emg, joints = [], []
    for m in read_ros2_messages(str(mcap_file)):
        (emg if m.channel.topic == "emg/raw" else joints).append(m.ros_msg)
    assert len(emg) == 100 and len(joints) == len(s.joint_time)
    first = emg[0]
    assert first.header.stamp.sec == 5 and first.sequence == 0 and first.num_samples == 10
    np.testing.assert_array_equal(np.asarray(first.data, np.float32).reshape(10, 3), s.emg[:10].astype(np.float32))
    assert list(joints[3].name) == ["elbow", "wrist"]
    np.testing.assert_allclose(joints[3].position, s.joint_position[3])
    # rclpy's own deserializer agrees on the CDR payload.
    from emg_rcnn_ros_msgs.msg import EmgArray
    from rclpy.serialization import deserialize_message
    from rosbags.rosbag2 import Reader

    with Reader(tmp_path / "bag") as reader:
        conn = next(c for c in reader.connections if c.msgtype == EMG_TYPE)
        raw = next(raw for _, _, raw in reader.messages(connections=[conn]))
    msg = deserialize_message(bytes(raw), EmgArray)
    assert msg.sequence == 0 and list(msg.channel_names) == ["a", "b", "c"]


def test_sequence_gaps_become_segments(tmp_path: Path) -> None:
    s = _session(4.0)
    s.segments = [(0, 1500), (2500, 4000)]  # samples 1500-2499 were lost
    write_session_bag(s, tmp_path / "bag", start_ns=0)
    back = load_bag(tmp_path / "bag")
    assert back.segments == [(0, 1500), (1500, 3000)]  # the gap is not in the EMG, windows cannot cross it
    np.testing.assert_array_equal(back.emg[1500:], s.emg[2500:].astype(np.float32))
    # Joint samples are placed on the EMG clock by their stamps: none from inside the gap.
    t_gap = (s.joint_time >= 1.5) & (s.joint_time < 2.5)
    assert len(back.joint_time) == int((~t_gap).sum())
    # After the gap the session clock runs 1 s behind the recording's: 2.6 s recorded is 1.6 s here.
    k = int(np.argmin(np.abs(s.joint_time - 2.6)))
    j = int(np.argmin(np.abs(back.joint_time - 1.6)))
    np.testing.assert_allclose(back.joint_position[j], s.joint_position[k])


def test_not_a_bag_is_reported(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    r = run_cli("evaluate", "--model", str(tmp_path / "m"), "--data", str(tmp_path / "d"))
    assert r.returncode != 0 and "no model bundle" in r.stderr
    r = run_cli("export", str(tmp_path / "d"), "--out", str(tmp_path / "x.npz"))
    assert r.returncode != 0 and "no session loader recognises" in r.stderr and "Traceback" not in r.stderr


def test_recording_refuses_what_would_lose_data_and_stops_when_the_disk_fills(tmp_path: Path) -> None:
    import shutil

    from emg_rcnn_ros.bags import bag_description, is_bag
    from emg_rcnn_ros.recording import Recording

    errors: list[str] = []
    rec = Recording(errors.append)
    free = shutil.disk_usage(tmp_path).free
    meta = {"subject": "s1"}
    why = rec.start(tmp_path / "a", "mcap", meta, "/gt", min_free=free * 10)
    assert why is not None and "min_free_space" in why and errors  # refused loudly, nothing opened
    assert rec.start(tmp_path / "a", "mcap", meta, "/gt", 0.0, gate=lambda: "no ground truth") == "no ground truth"
    assert rec.path is None
    assert rec.start(tmp_path / "a", "mcap", meta, "/gt", 0.0) is None
    assert "already recording" in rec.start(tmp_path / "b", "mcap", meta, "/gt", 0.0)
    assert rec.flush(min_free=0.0) is None
    assert "disk almost full" in rec.flush(min_free=free * 20)  # below a tenth of the minimum
    closed = rec.close({"estimated_sample_rate": "999.5"})
    assert closed is not None and rec.path is None and rec.close() is None
    assert is_bag(tmp_path / "a")
    assert bag_description(tmp_path / "a")["estimated_sample_rate"] == "999.5"
    rec2 = Recording(errors.append)
    assert "exists" in rec2.start(tmp_path / "a", "mcap", meta, "/gt", 0.0)  # never overwritten
