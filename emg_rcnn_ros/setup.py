"""ament_python build of emg_rcnn_ros (colcon on a ROS install, or pip in a venv)."""

from glob import glob

from setuptools import find_packages, setup

PACKAGE = "emg_rcnn_ros"

# One console script per node; the runner and the launch files name these. They point at the light
# process module, which handles SIGINT/SIGTERM before the node's heavy imports (torch) begin.
NODES = {
    "emg_acquisition": "emg_rcnn_ros.nodes.process:acquisition",
    "emg_features": "emg_rcnn_ros.nodes.process:features",
    "emg_estimator": "emg_rcnn_ros.nodes.process:estimator",
    "emg_command": "emg_rcnn_ros.nodes.process:command",
    "emg_trainer": "emg_rcnn_ros.nodes.process:trainer",
}
TOOLS = {
    "emg-rcnn": "emg_rcnn_ros.cli:main",
    "emg-rcnn-ros": "emg_rcnn_ros.runner:main",
}

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(exclude=["test"]),
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.launch.py")),
        (f"share/{PACKAGE}/config", glob("config/*.yaml")),
    ],
    # ROS packages (rclpy, messages) are deliberately absent: they come from the ROS install
    # (or, on machines without one, from requirements/ros.txt).
    install_requires=["setuptools", "numpy", "scipy", "scikit-learn", "tqdm", "matplotlib", "pyserial", "rosbags",
                      "threadpoolctl", "mcap", "pyyaml"],
    zip_safe=True,
    maintainer="emg_rcnn_ros developers",
    maintainer_email="dev@emg-rcnn-ros.example",
    description="EMG-based joint angle estimation with a recurrent convolutional network.",
    license="Apache-2.0",
    entry_points={"console_scripts": [f"{k} = {v}" for k, v in {**NODES, **TOOLS}.items()]},
)
