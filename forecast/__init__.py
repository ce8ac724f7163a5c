"""Domain core of the Dow30 weekly forecaster.

Universe, data providers and cache, weekly windows and labels, the prompt model and its
chat-template renderers, the answer parser and the metrics. Imports nothing from the
service, training or clients layers.
"""

__version__ = "0.1.0"
