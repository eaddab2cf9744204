"""Torch modules used by estimators that train networks; imported only by those estimators."""
