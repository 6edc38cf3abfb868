"""lecture_lib: the helper library of the course "Explaining convolutional networks".

One module per idea of the lecture; see the README for the map.
"""

__version__ = "0.1.0"
