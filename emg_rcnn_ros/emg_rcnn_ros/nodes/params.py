"""Parameters: every one declared with a description (and shipped in config/*.yaml)."""

from __future__ import annotations

import rclpy
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.node import Node
from rclpy.parameter import Parameter

ARRAY_TYPES = {str: Parameter.Type.STRING_ARRAY, float: Parameter.Type.DOUBLE_ARRAY,
               int: Parameter.Type.INTEGER_ARRAY}


def declare(node: Node, name: str, default: object, description: str) -> None:
    """Declare with a description. A list default names its element type: [str] declares a string
    array that may be left empty ([] in YAML carries no type)."""
    desc = ParameterDescriptor(description=description)
    if isinstance(default, list) and len(default) == 1 and isinstance(default[0], type):
        node.declare_parameter(name, ARRAY_TYPES[default[0]], desc)
    else:
        node.declare_parameter(name, default, desc)


def param(node: Node, name: str) -> object:
    """Value of a declared parameter; [] for an array left empty."""
    try:
        return node.get_parameter(name).value
    except rclpy.exceptions.ParameterUninitializedException:
        return []
