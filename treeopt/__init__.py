"""treeopt: calibrate Medusa heads, build the speculation tree that is fastest on your device, export it."""

__version__ = "0.1.0"
