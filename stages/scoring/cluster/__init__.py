"""Engine `ray`: scoring on a Ray Data actor pool (`engine`), one onnxruntime session per actor (`actor`), the
resources each actor reserves (`resources`) and what the run learns about lost nodes and restarts (`health`)."""
