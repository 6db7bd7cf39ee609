// Issue 12 (BENCHMARKS.md, "Why `queue_8b_1p1c` is bimodal"): gcc -O2 -o pingpong pingpong.c
// && chrt -f 10 ./pingpong ROUNDS ROUND_TRIPS
// Cross-core cache-line round trip between two processes (shared anonymous mapping).
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <stdint.h>
#include <sched.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>
#include <time.h>
static double now(void){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec+t.tv_nsec*1e-9;}
int main(int argc,char**argv){
  int rounds=argc>1?atoi(argv[1]):10; long n=argc>2?atol(argv[2]):200000;
  for(int r=0;r<rounds;r++){
    volatile uint64_t *w=mmap(0,4096,PROT_READ|PROT_WRITE,MAP_SHARED|MAP_ANONYMOUS,-1,0);
    w[0]=0;
    pid_t p=fork();
    if(p==0){ int c=sched_getcpu(); for(long i=0;i<n;i++){ while(w[0]!=2*i+1) __builtin_ia32_pause(); w[0]=2*i+2;} w[8]=c; _exit(0);}
    double t0=now();
    for(long i=0;i<n;i++){ w[0]=2*i+1; while(w[0]!=2*i+2) __builtin_ia32_pause(); }
    double dt=now()-t0; waitpid(p,0,0);
    double la; FILE*f=fopen("/proc/loadavg","r"); fscanf(f,"%lf",&la); fclose(f);
    printf("round trip %6.1f ns  cpus %d/%ld  load %.2f\n", dt/n*1e9, sched_getcpu(), (long)w[8], la);
    munmap((void*)w,4096);
  }
}
