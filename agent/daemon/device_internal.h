/* Shared between the device glue's .c files; not part of device.h. */
#ifndef EL_DAEMON_DEVICE_INTERNAL_H
#define EL_DAEMON_DEVICE_INTERNAL_H

#include <stdint.h>

#include "base/error.h"
#include "store/store.h"
#include "sync/delta.h"

/* The hash releases and deltas name a base by: SHA-256 of model.safetensors
 * (the fleet tool's convention), as the registry recorded it for BASE_ID.
 * Returns 0 or EL_ENOTFOUND. */
int el_device_base_hash(el_store *s, int64_t base_id, char hash[65], el_error *err);

/* Reads a PEFT adapter_model.safetensors at PATH into SET (caller-owned,
 * el_delta_set_finish). On failure SET is empty. */
int el_device_load_tensors(const char *path, el_delta_set *set, el_error *err);

/* Exports version ID of S into DIR and reads its tensors into SET; DIR's
 * files are removed again in every case. */
int el_device_version_tensors(el_store *s, int64_t id, const char *dir, el_delta_set *set,
                              el_error *err);

/* Removes DIR's PEFT files and DIR; missing ones are fine. */
void el_device_remove_adapter_dir(const char *dir);

#endif
