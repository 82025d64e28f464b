"""The album data model, the album folder dataset (reader/writer with counted skips) and the
demo world generator."""

from dpalbum.albums.model import Album, AlbumSet, Photo

__all__ = ["Album", "AlbumSet", "Photo"]
