/* The API bench's floor: an epoll HTTP/1.1 server in C answering fixed bytes.
 *
 *     floor_server RESPONSE_FILE     prints "PORT\n" once listening
 *
 * RESPONSE_FILE holds one complete HTTP response (status line, headers, body),
 * which is written once per request received ("\r\n\r\n" counted) on
 * keep-alive connections; no parsing beyond that. It costs a few
 * microseconds per request, so its latency under the same paced load is what
 * the host and the loopback network alone give: the floor under any server's
 * p99 there (bench/test_api_bench.py). Benchmark-only code: requests without
 * a body, from wrk.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

static char response[65536];
static size_t response_length;

static void answer(int fd, const char *data, ssize_t length, int *matched) {
    /* `matched` carries a partial "\r\n\r\n" over reads */
    static const char end[] = "\r\n\r\n";
    for (ssize_t i = 0; i < length; i++) {
        *matched = data[i] == end[*matched] ? *matched + 1 : (data[i] == '\r' ? 1 : 0);
        if (*matched == 4) {
            *matched = 0;
            if (write(fd, response, response_length) != (ssize_t)response_length) return;
        }
    }
}

int main(int argc, char **argv) {
    if (argc != 2) { fprintf(stderr, "usage: floor_server RESPONSE_FILE\n"); return 2; }
    FILE *file = fopen(argv[1], "rb");
    if (!file) { perror(argv[1]); return 1; }
    response_length = fread(response, 1, sizeof response, file);
    fclose(file);
    int listener = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    struct sockaddr_in address = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t address_length = sizeof address;
    if (bind(listener, (struct sockaddr *)&address, sizeof address) || listen(listener, 1024) ||
        getsockname(listener, (struct sockaddr *)&address, &address_length)) { perror("listen"); return 1; }
    printf("%d\n", ntohs(address.sin_port));
    fflush(stdout);
    int poller = epoll_create1(0);
    static int matched[65536];
    struct epoll_event event = {.events = EPOLLIN, .data.fd = listener}, events[256];
    epoll_ctl(poller, EPOLL_CTL_ADD, listener, &event);
    char buffer[65536];
    for (;;) {
        int ready = epoll_wait(poller, events, 256, -1);
        for (int i = 0; i < ready; i++) {
            int fd = events[i].data.fd;
            if (fd == listener) {
                int client = accept(listener, NULL, NULL);
                if (client < 0 || client >= (int)(sizeof matched / sizeof *matched)) { if (client >= 0) close(client); continue; }
                setsockopt(client, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                matched[client] = 0;
                struct epoll_event added = {.events = EPOLLIN, .data.fd = client};
                epoll_ctl(poller, EPOLL_CTL_ADD, client, &added);
                continue;
            }
            ssize_t got = read(fd, buffer, sizeof buffer);
            if (got <= 0) { close(fd); continue; }
            answer(fd, buffer, got, &matched[fd]);
        }
    }
}
