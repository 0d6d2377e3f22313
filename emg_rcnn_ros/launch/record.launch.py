"""ros2 launch emg_rcnn_ros record.launch.py subject:=s01 [driver:=... ground_truth_topic:=/joint_states]

Acquisition -> trainer (records EMG and ground-truth joint angles into rosbag2 bags)."""

from emg_rcnn_ros.launch_support import describe

GRAPH = "record"


def generate_launch_description():
    return describe(GRAPH)
