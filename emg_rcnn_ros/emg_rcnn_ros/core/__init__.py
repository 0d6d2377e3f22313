"""The estimation core: plain numpy/scipy/torch, never rclpy (the nodes wire it to topics)."""
