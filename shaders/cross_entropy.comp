#version 450
// Cross-entropy over logits[T, V], one workgroup per row t:
//   loss[t] = logsumexp(logits[t]) - logits[t, target]   (max subtracted)
//   dlogits[t] = grad_scale * (softmax(logits[t]) - onehot(target))
// A row is split over the workgroup's lanes (lane l takes columns l, l+64,
// ...): a vocabulary of 32000 in one invocation would exceed lavapipe's loop
// limiter (ops_common.glsl note 4). The max and the sum are combined through
// shared memory; every lane sums the 64 partials in the same order, so all
// lanes hold bit-identical m and sum without another broadcast.
// A target outside [0, V) (-1 = not scored) gives loss 0 and a zero
// gradient row. Flags: bit 0 = write the gradient; bit 1 = the gradient
// overwrites the logits in place, written through the logits binding so the
// compiler sees one buffer. Every read of the row (max, sum, the target's
// logit) happens before the barrier that precedes the first write.
#extension GL_GOOGLE_include_directive : require
#include "ops_common.glsl"

layout(set = 0, binding = 0, std430) buffer Logits { float logits[]; };
layout(set = 0, binding = 1, std430) readonly buffer Targets { int targets[]; };
layout(set = 0, binding = 2, std430) writeonly buffer Loss { float loss[]; };
layout(set = 0, binding = 3, std430) writeonly buffer Dlogits { float dlogits[]; };

layout(push_constant) uniform Push {
    uint off_logits, off_targets, off_loss, off_dlogits;
    uint T, V;
    float grad_scale;
    uint flags;
} pc;

shared float partial[OPS_LOCAL];

void put_grad(uint t, uint c, float g)
{
    if ((pc.flags & 2u) != 0u)
        logits[pc.off_logits + t * pc.V + c] = g;
    else
        dlogits[pc.off_dlogits + t * pc.V + c] = g;
}

void main()
{
    bool want_grad = (pc.flags & 1u) != 0u;
    uint lane = gl_LocalInvocationID.x;
    // The row loop and the scored test are uniform over the workgroup, so
    // every lane reaches every barrier.
    for (uint t = gl_WorkGroupID.x; t < pc.T; t += gl_NumWorkGroups.x) {
        int target = targets[pc.off_targets + t];
        uint lr = pc.off_logits + t * pc.V;
        if (target < 0 || uint(target) >= pc.V) {
            if (lane == 0u)
                loss[pc.off_loss + t] = 0.0f;
            if (want_grad)
                for (uint c = lane; c < pc.V; c += uint(OPS_LOCAL))
                    put_grad(t, c, 0.0f);
            continue;
        }
        float m = uintBitsToFloat(0xff800000u);   // -inf: a lane may own no column
        for (uint c = lane; c < pc.V; c += uint(OPS_LOCAL))
            m = max(m, logits[lr + c]);
        partial[lane] = m;
        barrier();
        m = partial[0];
        for (uint k = 1u; k < uint(OPS_LOCAL); k++)
            m = max(m, partial[k]);
        barrier();
        float sum = 0.0f;
        for (uint c = lane; c < pc.V; c += uint(OPS_LOCAL))
            sum += exp(logits[lr + c] - m);
        partial[lane] = sum;
        float target_logit = logits[lr + uint(target)];
        barrier();
        sum = 0.0f;
        for (uint k = 0u; k < uint(OPS_LOCAL); k++)
            sum += partial[k];
        // the next row rewrites `partial`; and in place, the gradient
        // writes below must follow every lane's reads above
        barrier();
        if (lane == 0u)
            loss[pc.off_loss + t] = m + log(sum) - target_logit;
        if (want_grad) {
            float inv = pc.grad_scale / sum;
            for (uint c = lane; c < pc.V; c += uint(OPS_LOCAL)) {
                float g = exp(logits[lr + c] - m) * inv;
                if (c == uint(target))
                    g -= pc.grad_scale;
                put_grad(t, c, g);
            }
        }
    }
}
