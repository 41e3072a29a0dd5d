"""The ResNeXt family, checkpoint loading and import of other layouts."""
