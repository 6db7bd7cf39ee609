// Issue 12 (BENCHMARKS.md, "Why `queue_8b_1p1c` is bimodal"): gcc -O2 -o spsc spsc.c &&
// chrt -f 10 ./spsc ROUNDS ITEMS PRODUCER_WORK CONSUMER_WORK (env LOCKED, SAMELINE, DELAY_US)
// Minimal SPSC ring between two processes (shared anonymous memory), 16-byte records,
// cached indices, consumer spins on `tail` when it has caught up (as multiproc's ring).
// Per put the producer does `work` iterations of local arithmetic (stand-in for encoding)
// and, with LOCKED=1, a locked RMW on a producer-only word before and after (stand-in for
// the producers' lock), on the tail's line (SAMELINE=1) or on its own line.
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <stdint.h>
#include <string.h>
#include <sched.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>
#include <time.h>
#define CAP (4u << 20)
static double now(void){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec+t.tv_nsec*1e-9;}
struct hdr { _Alignas(128) volatile uint64_t tail; volatile uint32_t plock_same; _Alignas(128) volatile uint64_t head; _Alignas(128) volatile uint32_t plock_own; _Alignas(128) volatile uint64_t empties; volatile double pdt; };
static inline uint64_t spin(uint64_t x, int n){ for(int i=0;i<n;i++) x = x*6364136223846793005ull + 1; return x; }
int main(int argc,char**argv){
  int rounds=atoi(argv[1]); long n=atol(argv[2]); int pw=atoi(argv[3]), cw=atoi(argv[4]);
  int locked=getenv("LOCKED")?atoi(getenv("LOCKED")):0, same=getenv("SAMELINE")?atoi(getenv("SAMELINE")):0;
  int delay_us=getenv("DELAY_US")?atoi(getenv("DELAY_US")):0;
  for(int r=0;r<rounds;r++){
    char *m=mmap(0,sizeof(struct hdr)+CAP,PROT_READ|PROT_WRITE,MAP_SHARED|MAP_ANONYMOUS,-1,0);
    struct hdr *h=(struct hdr*)m; uint8_t *ring=(uint8_t*)m+sizeof(struct hdr);
    volatile uint32_t *lk = same ? &h->plock_same : &h->plock_own;
    pid_t p=fork();
    if(p==0){ uint64_t x=1, t=0; double t0=now();
      for(long i=0;i<n;i++){ x=spin(x,pw);
        if(locked) __atomic_fetch_add(lk,1,__ATOMIC_SEQ_CST);
        uint64_t rec[2]={8|(1ull<<32), x}; memcpy(ring+(t%CAP),rec,16); t+=16;
        __atomic_store_n(&h->tail,t,__ATOMIC_SEQ_CST);
        if(locked) __atomic_fetch_add(lk,1,__ATOMIC_SEQ_CST);
      }
      h->pdt=now()-t0; _exit(x==42); }
    double t0=now(); while(now()-t0<delay_us*1e-6);
    uint64_t hd=0, seen=0, x=0, empt=0;
    for(long i=0;i<n;i++){
      if(seen==hd){ seen=__atomic_load_n(&h->tail,__ATOMIC_ACQUIRE); if(seen==hd){ empt++; while((seen=__atomic_load_n(&h->tail,__ATOMIC_ACQUIRE))==hd) __builtin_ia32_pause(); } }
      uint64_t rec[2]; memcpy(rec,ring+(hd%CAP),16); x+=rec[1]; hd+=16;
      __atomic_store_n(&h->head,hd,__ATOMIC_RELEASE); x=spin(x,cw);
    }
    double dt=now()-t0; waitpid(p,0,0);
    double la; FILE*f=fopen("/proc/loadavg","r"); fscanf(f,"%lf",&la); fclose(f);
    printf("%5.2f M/s  cons %5.1f ms prod %5.1f ms  empties %6lu  load %.2f\n", n/dt/1e6, dt*1e3, h->pdt*1e3, empt, la);
    munmap(m,sizeof(struct hdr)+CAP);
  }
}
