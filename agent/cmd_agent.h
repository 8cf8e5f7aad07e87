/* What the agent commands (cmd_agent.c) share with the other state commands:
 * routing a state-changing command through a running agent. */
#ifndef EL_CMD_AGENT_H
#define EL_CMD_AGENT_H

#include <jansson.h>

#include "cmd_state.h"

/* Routes REQUEST (consumed; NULL counts as out of memory) for command C
 * (daemon/agent.h el_agent_route): when an agent answers with success,
 * returns 0 with *REPLY (new reference, caller decrefs) and *LOCK_FD -1;
 * when no agent runs, returns 0 with *REPLY NULL and the agent lock held in
 * *LOCK_FD: the caller does the work directly, then el_agent_route_end. A
 * failure (the agent's refusal included, with the tag and exit status the
 * direct path would give) is printed and its exit status returned; nothing
 * is held then. Routed commands print "via": "agent" or "direct" in their
 * --json output, and otherwise the same thing either way. */
int el_cli_route(el_cli_state *c, json_t *request, json_t **reply, int *lock_fd);

/* The --help paragraph of a routed command. */
#define EL_CLI_ROUTED_HELP                                                              \
    "While an agent runs on the state this goes through its socket (--json\n"           \
    "adds \"via\": \"agent\", else \"direct\"); same output and exit status.\n"         \
    "EDGELOOP_AGENT_WAIT_S (default 15): how long to wait for an agent that\n"          \
    "holds agent.lock but does not answer; then exit 1, nothing changed.\n"

#endif
