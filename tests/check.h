/* Minimal test harness shared by every test executable under tests/.
 * CHECK* record a failure and go on; the program's exit status is
 * el_test_done(): 0 all passed, 1 some failed. Exit 77 means skipped
 * (meson's convention) and is only used where the facility is absent. */
#ifndef EL_TESTS_CHECK_H
#define EL_TESTS_CHECK_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int el_test_failures;
static int el_test_checks;

#define CHECK(cond) \
    do { \
        el_test_checks++; \
        if (!(cond)) { \
            el_test_failures++; \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
        } \
    } while (0)

#define CHECK_MSG(cond, ...) \
    do { \
        el_test_checks++; \
        if (!(cond)) { \
            el_test_failures++; \
            fprintf(stderr, "%s:%d: CHECK failed: %s: ", __FILE__, __LINE__, #cond); \
            fprintf(stderr, __VA_ARGS__); \
            fputc('\n', stderr); \
        } \
    } while (0)

/* rc must be 0; prints the el_error message otherwise. */
#define CHECK_OK(rc, errp) \
    CHECK_MSG((rc) == 0, "rc=%d: %s", (int)(rc), (errp)->msg)

#define CHECK_STR(a, b) \
    CHECK_MSG(strcmp((a), (b)) == 0, "\"%s\" != \"%s\"", (a), (b))

/* |a - b| <= tol * max(1, |b|) */
#define CHECK_NEAR(a, b, tol) \
    CHECK_MSG(fabs((double)(a) - (double)(b)) <= (tol) * fmax(1.0, fabs((double)(b))), \
              "%.9g vs %.9g (tol %g)", (double)(a), (double)(b), (double)(tol))

static inline int el_test_done(const char *name)
{
    printf("%s: %d checks, %d failed\n", name, el_test_checks, el_test_failures);
    return el_test_failures ? 1 : 0;
}

#endif
