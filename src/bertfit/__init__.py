"""bertfit: Sun et al. (2019) "How to Fine-Tune BERT for Text Classification?" as a DVC pipeline."""

__version__ = "0.1.0"
