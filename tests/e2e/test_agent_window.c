/* The agent's training window: "HH:MM-HH:MM" parsing (bounds, garbage,
 * empty = any time) and membership, including windows that wrap midnight. */
#include <string.h>

#include "check.h"
#include "daemon/agent.h"

static int in(const char *window, int hour, int minute)
{
    int from, to;
    el_error err = {0};
    int rc = el_agent_window_parse(window, &from, &to, &err);
    CHECK_OK(rc, &err);
    return el_agent_window_contains(from, to, hour * 60 + minute);
}

int main(void)
{
    /* a night window wraps midnight: [22:00, 06:00) */
    CHECK(in("22:00-06:00", 22, 0));
    CHECK(in("22:00-06:00", 23, 59));
    CHECK(in("22:00-06:00", 0, 0));
    CHECK(in("22:00-06:00", 5, 59));
    CHECK(!in("22:00-06:00", 6, 0));
    CHECK(!in("22:00-06:00", 12, 0));
    CHECK(!in("22:00-06:00", 21, 59));
    /* a day window does not */
    CHECK(in("09:30-17:00", 9, 30));
    CHECK(in("09:30-17:00", 16, 59));
    CHECK(!in("09:30-17:00", 9, 29));
    CHECK(!in("09:30-17:00", 17, 0));
    /* empty, or from == to: any time */
    CHECK(in("", 3, 0));
    CHECK(in("00:00-00:00", 13, 37));

    const char *bad[] = {"22:00", "22:00-6", "24:00-06:00", "22:60-06:00", "22:00-06:00x",
                         "-1:00-06:00", "ab:cd-ef:gh", "22:00 - 06:00"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int from = 7, to = 7;
        el_error err = {0};
        CHECK_MSG(el_agent_window_parse(bad[i], &from, &to, &err) == EL_EINPUT,
                  "\"%s\" accepted", bad[i]);
        CHECK(strstr(err.msg, "HH:MM-HH:MM") != NULL);
    }
    return el_test_done("test_agent_window");
}
