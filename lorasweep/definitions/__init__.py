"""What a run is judged by, shared by every stage: the reward registry and the stopping rule."""
