// Pieces shared by the two matmul variants (matmul_regblock.comp for CPU-type
// devices, matmul_tiled.comp for GPUs). C[M,N] = alpha * op(A) op(B) + beta*C
// in the three layouts of backend.h; LAYOUT is a specialization constant so
// the driver folds the index arithmetic of the chosen layout.
//   0 NT: A[M,K], B[N,K]     1 NN: A[M,K], B[K,N]     2 TN: A[K,M], B[K,N]
// beta == 0 overwrites C (BLAS convention).

layout(set = 0, binding = 0) readonly buffer A { float a[]; };
layout(set = 0, binding = 1) readonly buffer B { float b[]; };
layout(set = 0, binding = 2) buffer C { float c[]; };
layout(push_constant) uniform Push {
    uint off_a; uint off_b; uint off_c;
    uint M; uint N; uint K; float alpha; float beta;
} pc;

// Element (i, k) of op(A) and (k, j) of op(B); callers keep i < M, j < N,
// k < K.
float load_a(uint i, uint k)
{
    return LAYOUT == 2 ? a[pc.off_a + k * pc.M + i] : a[pc.off_a + i * pc.K + k];
}

float load_b(uint k, uint j)
{
    return LAYOUT == 0 ? b[pc.off_b + j * pc.K + k] : b[pc.off_b + k * pc.N + j];
}

void store_c(uint i, uint j, float acc)
{
    uint idx = pc.off_c + i * pc.N + j;
    float r = pc.alpha * acc;
    if (pc.beta != 0.0)
        r += pc.beta * c[idx];
    c[idx] = r;
}
