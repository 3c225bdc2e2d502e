"""Flickr8kExampleGen: a custom ExampleGen for the Flickr8k release layout."""
