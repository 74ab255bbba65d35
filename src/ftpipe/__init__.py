"""ftpipe: reproducible fine-tuning pipelines for pretrained transformers."""

__version__ = "0.1.0"
