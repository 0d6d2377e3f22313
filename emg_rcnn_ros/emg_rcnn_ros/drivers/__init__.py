"""EMG sources without rclpy: byte-level protocol parsers, the serial reader, the simulator source."""
