"""SakaiBot: queue, enhance and generate images from chat commands through your own workers."""

__version__ = "0.1.0"
