"""One runner per backend behind one interface, and the onnxruntime provider guard."""
