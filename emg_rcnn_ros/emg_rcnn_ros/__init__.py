"""emg_rcnn_ros: joint angles from multi-channel surface EMG with a recurrent convolutional network."""

__version__ = "0.1.0"
