"""Music and audio: pitch classes and scales, the mood vocabulary, audio I/O, librosa analysis."""
