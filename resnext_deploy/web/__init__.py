"""The export as a static web page that classifies in the browser (onnxruntime-web)."""
