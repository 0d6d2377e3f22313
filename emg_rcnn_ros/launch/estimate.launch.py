"""ros2 launch emg_rcnn_ros estimate.launch.py [driver:=serial port:=/dev/ttyACM0 autostart:=true ...]

Acquisition -> features -> estimator. The node list and parameters come from emg_rcnn_ros.graph,
the same module the `emg-rcnn-ros launch` runner uses."""

from emg_rcnn_ros.launch_support import describe

GRAPH = "estimate"


def generate_launch_description():
    return describe(GRAPH)
