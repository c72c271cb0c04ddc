//! Quantized block formats: dequantize, dot with f32, quantize (scalar reference code).
