"""Where clips come from: the MTG-Jamendo reader (local or GCS) and the procedural mood corpus."""
