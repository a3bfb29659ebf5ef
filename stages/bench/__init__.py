"""Measuring how the model serves. The `benchmark` stage's room: serving variants (`variants`: torch fp32/bf16,
onnxruntime fp32/int8, OpenVINO (`openvino`), CUDA ones on a GPU) timed side by side on the same rows (`harness`,
`serving`), against model FLOPs (`flops`) and the matmul peaks measured in the same run (`peaks`), reported
(`report`) for the model under test (`subject`); and the export's `runtime.backend: auto` choice (`choice`: the fastest runtime among those that pass the parity gate)."""
