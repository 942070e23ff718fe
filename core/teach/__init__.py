"""The numbers behind the Learn explainers."""
