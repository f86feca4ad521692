"""Data: chat formatting, prompt-masked examples, datamodules and calibration sets."""
