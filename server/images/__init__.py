"""Images: streamed uploads into content-addressed storage, listing, files, thumbnails."""
