/* The engine's SQLite copy answers and is the 3.x series the notes measured. */
#include <assert.h>
#include <stdio.h>
#include <string.h>

#include "version.h"

int main(void) {
    const char *version = rmt_sqlite_version();
    assert(version != NULL);
    assert(strncmp(version, "3.", 2) == 0);
    printf("sqlite %s\n", version);
    return 0;
}
