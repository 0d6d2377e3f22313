"""ROS 2 nodes: thin wiring of parameters, topics, timers and lifecycle to the core."""
