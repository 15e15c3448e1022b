"""Bastion: a self-hosted security gateway between trading bots and venues."""

__version__ = "0.1.0"
