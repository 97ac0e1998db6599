"""SAEMI: size analysis of electron-microscopy images."""

__version__ = "0.1.0"
