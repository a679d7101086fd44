"""mxflow: one mail-flow engine that runs as a filtering gateway, an archiver or a mailbox host."""

__version__ = "0.1.0"
